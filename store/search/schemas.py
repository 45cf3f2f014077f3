"""API shapes for search results and the Docker index search API."""

from __future__ import annotations

from pydantic import BaseModel, Field


class PriceRange(BaseModel):
    min_minor: int
    max_minor: int
    currency: str = Field(description="ISO currency, lower case; empty when free only")


class OwnedOut(BaseModel):
    label: str = Field(
        description="You own this | Your plan | Checkout in progress | <organisation> owns this"
    )
    manage_url: str


class SearchHitOut(BaseModel):
    source: str = Field(description="store (a listing) or hub (a registry repository)")
    name: str = Field(description="Repository, '<namespace>/<name>'")
    title: str
    summary: str
    kind: str
    publisher: str
    publisher_name: str
    badges: list[str] = Field(description="official, certified, verified")
    pricing: list[str] = Field(description="free, paid, trial")
    price: PriceRange | None = None
    categories: list[str]
    platforms: list[str]
    pull_count: int
    star_count: int
    status: str = Field(description="published, draft, suspended (listings); public, private")
    entitled: bool | None = Field(
        default=None, description="Logged in only: you may use this listing now"
    )
    owned: OwnedOut | None = Field(
        default=None,
        description="Logged in only: an open purchase of this listing by you or your "
        "organisation, and where it is managed",
    )
    url: str | None = Field(
        description="The page: a store listing, or a hub repository's /r/<namespace>/<name>"
    )


class FacetValueOut(BaseModel):
    value: str
    label: str
    count: int
    selected: bool


class SearchPage(BaseModel):
    query: str
    page: int
    per_page: int
    total: int = Field(description="Matches (at most 500 are counted)")
    total_exact: bool = Field(description="False when there are more than `total` matches")
    pages: int
    results: list[SearchHitOut]
    facets: dict[str, list[FacetValueOut]] = Field(
        description="source, kind, category, pricing, badge, publisher, platform"
    )
    sort: str = Field(
        default="relevance",
        description="The order used (relevance, pulls, stars, updated, price, title)",
    )
    notice: str | None = Field(
        default=None, description="Set when the sort asked for names no order (relevance was used)"
    )
    did_you_mean: str | None = Field(
        default=None, description="A query with misspelt words replaced, when nothing matched"
    )


class DockerSearchResult(BaseModel):
    name: str
    description: str
    star_count: int
    is_official: bool
    is_automated: bool


class DockerSearchPage(BaseModel):
    num_results: int
    num_pages: int
    page: int
    page_size: int
    query: str
    results: list[DockerSearchResult]
