"""The WSGI entry point: `gunicorn wsgi:app`, `flask --app wsgi ...`."""

from booking import create_app
from booking.config import ConfigError

try:
    app = create_app()
except ConfigError as exc:
    # A setting a person must fix: one line saying which and how, not a traceback.
    raise SystemExit(f"Error: {exc}") from None
