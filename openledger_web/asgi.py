"""The web server's entry point: `make run` serves it with gunicorn's uvicorn worker (`uvicorn_worker.UvicornWorker`).

ASGI, so that the streaming answers (``inference.views.stream``, the ``/v1`` streams) wait for tokens on the event loop
without holding a thread each; the other views are sync and run in Django's per-request threads. ``wsgi.py`` stays for
``runserver`` and the tests' live server, where the same streams are served by sync iterators that wait in a thread.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "openledger_web.settings")
application = get_asgi_application()
