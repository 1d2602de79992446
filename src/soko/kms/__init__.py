"""KMS: customer-managed and AWS-managed symmetric keys (``service``), their errors (``errors``), the ciphertext
format (``ciphertext``) and the TrentService API on the AWS endpoint (``api``)."""
