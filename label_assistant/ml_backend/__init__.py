"""The Label Studio ML backend: Flask app, protocol, webhook intake, job runner."""
