"""The Label Studio ML backend: a thin shell of I/O around the pure parts of the package.

- :mod:`.settings`: the settings (environment variables), one declaration each;
- :mod:`.protocol`: what Label Studio sends, parsed (project ids, label configs, task images);
- :mod:`.origin`: which Label Studio a project talks to, with which token (the one resolver);
- :mod:`.store`: durable state in SQLite (projects, events, annotation revisions, jobs);
- :mod:`.fetch`: task images from Label Studio only, with limits and a cache, or a task's
  original plane from the work directory when ``import`` made it;
- :mod:`.prelabels`: the serving version of a project (Otsu or a model) and ``/predict``'s
  answers;
- :mod:`.worker`: the intake worker: events, the gate with the serving model's
  probabilities, the training policy, notifications;
- :mod:`.jobs`: background jobs (training, ranking, pre-labeling) in their own processes,
  and their supervision;
- :mod:`.ranking`: rank a project's unlabeled tasks and write the order back;
- :mod:`.project_prelabels`: whole-project pre-labeling through Label Studio's predictions
  API, in batches, resumable;
- :mod:`.sinks`: where the worker's news goes (Label Studio, nowhere, a test's recorder);
- :mod:`.metrics`: ``/metrics`` for Prometheus;
- :mod:`.app`: the Flask application factory (``create_app``): parse, call, format.

``label-assistant serve`` runs the app under gunicorn plus one worker process.
"""
