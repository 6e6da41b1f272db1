"""An ordinary Flask app: templates and static files in folders beside it."""

from flask import Flask, render_template

app = Flask(__name__)
ITEMS = ["kettle", "teapot", "<script>"]


@app.route("/")
def index():
    return render_template("index.html", items=ITEMS)


@app.route("/item/<int:n>")
def item(n):
    return render_template("item.html", name=ITEMS[n])
