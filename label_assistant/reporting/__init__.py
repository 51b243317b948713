"""What people read about the rounds and the labels: tables, plots, pages and overlays.

- :mod:`.rounds`: the history of training rounds (``label-assistant rounds``), one row per
  model version plus jobs that made none;
- :mod:`.report`: plots and a self-contained HTML page of those rounds (``label-assistant
  report``);
- :mod:`.plots`: every matplotlib figure of the project (the rounds' plots and the
  simulator's learning curves), drawn to PNG files;
- :mod:`.overlay`: label maps outlined over their image (``prelabel --overlay``).
"""
