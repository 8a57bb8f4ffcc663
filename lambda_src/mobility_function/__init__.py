"""A host's mobility function: exports a tenant of the host into the host's export bucket and
imports an export from it (lambda_src.mobility does the work; this carries it to and from S3)."""
