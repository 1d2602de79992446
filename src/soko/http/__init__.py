"""HTTP layer: request/response types, the RSGI adapter and granian listeners, request context, streaming helpers,
the AWS front door, worker processes."""
