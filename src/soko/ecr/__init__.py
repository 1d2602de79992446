"""The ECR control plane (AWS JSON 1.1): operations translate to domain calls; errors map to ECR exceptions."""
