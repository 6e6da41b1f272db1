"""A FastAPI app (ASGI, pydantic models) with numpy, served in the guest by uvicorn.

pydantic validates with pydantic_core's compiled (Rust) extension; /stats computes
with numpy, whose compiled core links to the OpenBLAS bundled in numpy.libs/.
"""

import os

import numpy as np
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field

app = FastAPI(title="krait fastapi example")


class Item(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    price: float = Field(gt=0)
    tags: list[str] = []


class Stored(Item):
    id: int


class Numbers(BaseModel):
    values: list[float] = Field(min_length=1)


ITEMS: dict[int, Stored] = {}


@app.get("/")
async def index() -> dict[str, object]:
    return {"hello": "from FastAPI in a krait unikernel", "pid": os.getpid(),
            "numpy": np.__version__}


@app.post("/items", status_code=201)
async def create(item: Item) -> Stored:
    stored = Stored(id=len(ITEMS) + 1, **item.model_dump())
    ITEMS[stored.id] = stored
    return stored


@app.get("/items/{item_id}")
async def read(item_id: int) -> Stored:
    if item_id not in ITEMS:
        raise HTTPException(status_code=404, detail="no such item")
    return ITEMS[item_id]


@app.post("/stats")
async def stats(numbers: Numbers) -> dict[str, float]:
    a = np.asarray(numbers.values)
    return {"mean": float(a.mean()), "std": float(a.std()), "sum": float(a.sum())}


@app.get("/matmul/{n}")
async def matmul(n: int) -> dict[str, float]:
    """An n x n matrix product through OpenBLAS, with a known answer: trace(A @ A^-1) = n."""
    if not 1 <= n <= 200:
        raise HTTPException(status_code=400, detail="1 <= n <= 200")
    rng = np.random.default_rng(0)
    a = rng.random((n, n)) + n * np.eye(n)
    return {"n": n, "trace": float(np.trace(a @ np.linalg.inv(a)))}
