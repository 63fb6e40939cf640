"""SMART PATH — Grafana provisioning and dashboards (data files); no Python logic."""
