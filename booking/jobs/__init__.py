"""Background work: what changes with time alone, done by the worker process
(`flask --app wsgi worker`), never by gunicorn's workers."""
