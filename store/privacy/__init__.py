"""What the store holds about a person, as a whole: account deletion and the data export.
They reach every domain (billing, licensing, the registry, mail), so they live above them."""
