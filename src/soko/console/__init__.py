"""The web console at /console/: server-rendered pages over the domain, authorized like the ECR API."""
