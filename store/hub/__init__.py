"""The hub as people use it: repositories with their tags, platforms, signatures, pulls and
stars, as the JSON API (and Docker Hub's v2 shapes) and the pages show them. Built on the
registry's records and the rule (store.registry) and on signing (store.signing)."""
