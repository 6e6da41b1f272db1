"""A Flask app run by gunicorn with two workers, started from Python (gunicorn's
"custom application" pattern)."""

from gunicorn.app.base import BaseApplication
from web import app


class Server(BaseApplication):
    def __init__(self, application, options):
        self.application, self.options = application, options
        super().__init__()

    def load_config(self):
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        return self.application


def main():
    Server(app, {"bind": "0.0.0.0:8000", "workers": 2, "loglevel": "warning"}).run()
