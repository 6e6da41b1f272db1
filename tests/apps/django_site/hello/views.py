import django
from django.shortcuts import render


def index(request):
    return render(request, "hello/index.html",
                  {"title": "Hello from Django", "version": django.get_version()})
