"""How the daemon is watched: the HTTP side (``/healthz``, ``/status``, ``/metrics``), the Prometheus
metrics behind ``/metrics``, and systemd's notify socket (READY, WATCHDOG, STOPPING, STATUS)."""
