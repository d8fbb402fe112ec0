"""The dashboard: Flask app factory, JSON API, live stream, served by waitress."""
