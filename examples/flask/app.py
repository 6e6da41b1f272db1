"""A Flask app (WSGI), served in the guest by waitress from the app's own venv."""

import os
import platform

from flask import Flask, abort, jsonify, request

app = Flask(__name__)
ITEMS: dict[int, str] = {}


@app.get("/")
def index():
    return f"Hello from Flask {platform.python_version()} (pid {os.getpid()})\n"


@app.get("/items")
def list_items():
    return jsonify(sorted(({"id": k, "name": v} for k, v in ITEMS.items()),
                          key=lambda i: i["id"]))


@app.post("/items")
def add_item():
    data = request.get_json(force=True)
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        abort(400)
    item_id = max(ITEMS, default=0) + 1
    ITEMS[item_id] = data["name"]
    return jsonify({"id": item_id, "name": data["name"]}), 201


@app.get("/items/<int:item_id>")
def get_item(item_id: int):
    if item_id not in ITEMS:
        abort(404)
    return jsonify({"id": item_id, "name": ITEMS[item_id]})


@app.get("/hello/<name>")
def hello(name: str):
    # Jinja2 and MarkupSafe's compiled escaping, inside the guest.
    from flask import render_template_string

    return render_template_string("<p>Hello, {{ name }}!</p>", name=name)
