"""FastAPI + pydantic v2, as written without krait in mind (served by krait's ASGI server)."""

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field

app = FastAPI(title="orders")
ORDERS: dict[int, "Order"] = {}


class Order(BaseModel):
    item: str = Field(min_length=1)
    quantity: int = Field(gt=0)


@app.post("/orders", status_code=201)
def create(order: Order) -> dict:
    number = len(ORDERS) + 1
    ORDERS[number] = order
    return {"id": number, **order.model_dump()}


@app.get("/orders/{number}")
def read(number: int) -> Order:
    if number not in ORDERS:
        raise HTTPException(404, "no such order")
    return ORDERS[number]
