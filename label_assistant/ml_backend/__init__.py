"""The Label Studio ML backend: Flask app, protocol, webhook intake, job runner.

- :mod:`.settings`: the settings (environment variables), in one place;
- :mod:`.store`: durable state in SQLite (projects, events, annotation revisions, jobs);
- :mod:`.fetch`: task images from Label Studio only, with limits and a cache;
- :mod:`.predict`: pre-labels (current model, or Otsu before one exists);
- :mod:`.worker`: the background worker: intake, the inspection gate, training jobs, and the
  :class:`~.worker.LabelStudioSink` protocol through which results reach Label Studio;
- :mod:`.metrics`: ``/metrics`` in the Prometheus text format;
- :mod:`.app`: the Flask application factory (``create_app``): parse, call, format.

``label-assistant serve`` runs the app under gunicorn plus one worker process.
"""
