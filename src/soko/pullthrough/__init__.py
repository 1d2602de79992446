"""Pull-through caches of upstream registries (ECR's pull-through cache rules): ``rules.py`` (the rules),
``cache.py`` (fetch, verify, store and serve what a pull under a rule's prefix lacks)."""
