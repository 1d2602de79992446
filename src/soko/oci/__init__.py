"""The OCI Distribution v1.1 front end (/v2/): wire format only; every decision is the domain's."""
