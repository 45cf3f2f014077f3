"""The index search API the Docker engine calls for ``docker search <store-host>/<term>``.

``GET /v1/search?q=<term>&n=<page size>&page=<page>``. The engine sends no credentials,
so results are what anonymous users see.
"""

from __future__ import annotations

from fastapi import APIRouter

from store.deps import DbSession
from store.search import service
from store.search.api import int_param
from store.search.query import BadQuery
from store.search.schemas import DockerSearchPage, DockerSearchResult

router = APIRouter(tags=["search"])


@router.get("/v1/search", response_model=DockerSearchPage)
def docker_search(
    session: DbSession, q: str = "", n: str | None = None, page: str | None = None
) -> DockerSearchPage:
    """Docker registry v1 search: name, description, stars, official/automated flags."""
    size = int_param(n, "n", 25)
    if not 1 <= size <= 100:
        raise BadQuery("n must be between 1 and 100")
    number = int_param(page, "page", 1)
    if number < 1:
        raise BadQuery("page starts at 1")
    results = service.search(session, q=q, page=number, per_page=size)
    return DockerSearchPage(
        num_results=results.total,
        num_pages=results.pages,
        page=number,
        page_size=size,
        query=q,
        results=[
            DockerSearchResult(
                name=h.doc.name,
                description=h.doc.summary or h.doc.title,
                star_count=h.doc.star_count,
                is_official=h.doc.official,
                is_automated=False,
            )
            for h in results.hits
        ],
    )
