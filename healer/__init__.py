"""healer: an autonomous self-healing daemon for applications on the CloudPilot PaaS."""

__version__ = "0.1.0"
