import requests  # used, never declared


def main():
    return requests.codes.ok
