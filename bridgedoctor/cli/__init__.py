"""The host command line: `bridgedoctor check NAME|all`."""
