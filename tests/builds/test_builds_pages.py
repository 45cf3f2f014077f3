"""The build pages: settings and the webhook secret for those who may push (a personal
namespace here), history, starting and canceling a build, the log the page polls; 404 for
those who may not pull the repository."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from store.builds.models import Build, BuildLogChunk, BuildSource
from tests.factories import make_account
from tests.web.helpers import HTML, login, submit


def test_build_pages(client: TestClient, session: Session) -> None:
    make_account(session, "alice")
    make_account(session, "bob")
    session.commit()
    page = "/r/alice/app/builds"
    assert client.get(page, headers=HTML).status_code == 404
    login(client, "alice")
    empty = client.get(page)
    assert empty.status_code == 200 and "No builds yet." in empty.text
    assert "Git repository URL" in empty.text

    bad = submit(client, page, f"{page}/settings",
                 {"url": "ftp://example.com/x.git", "rules": "branch main latest"})  # fmt: skip
    assert bad.status_code == 422 and "is not a Git URL" in bad.text
    assert "ftp://example.com/x.git" in bad.text  # the input is kept
    saved = submit(client, page, f"{page}/settings", {
        "url": "https://git.example.com/alice/app.git",
        "rules": "branch main latest\ntag v* {ref} docker/Dockerfile docker",
        "args": "VERSION=2", "schedule": "", "timeout": "600",
    })  # fmt: skip
    assert saved.status_code == 200 and "The build settings are saved." in saved.text
    assert "The webhook secret" in saved.text
    again = client.get(page)
    assert "The webhook secret" not in again.text  # shown once
    assert "tag v* {ref} docker/Dockerfile docker" in again.text

    started = submit(client, page, page, {"ref": "main"})
    assert started.status_code == 200 and "Build of refs/heads/main queued." in started.text
    build = session.scalars(select(Build)).one()
    assert (build.docker_tag, build.build_args, build.timeout_seconds) == (
        "latest", {"VERSION": "2"}, 600,
    )  # fmt: skip
    session.add(BuildLogChunk(build_id=build.id, seq=0, text="STEP 1/3: FROM scratch\n"))
    session.commit()
    detail = f"{page}/{build.id}"
    shown = client.get(detail)
    assert "Queued" in shown.text and "STEP 1/3: FROM scratch" in shown.text
    assert f'data-log-url="{detail}/log"' in shown.text
    polled = client.get(f"{detail}/log", params={"after": -1}).json()
    assert polled["text"] == "STEP 1/3: FROM scratch\n" and polled["next"] == 0
    assert polled["final"] is False
    assert client.get(f"{detail}/log", params={"after": 0}).json()["text"] == ""

    canceled = submit(client, detail, f"{detail}/cancel")
    assert canceled.status_code == 200 and "Canceled." in canceled.text
    assert client.get(f"{detail}/log").json()["final"] is True

    client.post("/logout", data={"csrf_token": ""})
    client.cookies.clear()
    login(client, "bob")
    assert client.get(page, headers=HTML).status_code == 404
    assert client.get(detail, headers=HTML).status_code == 404
    assert client.get(f"{detail}/log").status_code == 404


def test_build_forms_show_each_error_beside_its_input(client: TestClient, session: Session) -> None:
    make_account(session, "carol")
    session.commit()
    page = "/r/carol/app/builds"
    login(client, "carol")
    good = {"url": "https://git.example.com/carol/app.git", "rules": "branch main latest"}
    cases = [
        ({**good, "url": "ftp://example.com/x.git"}, "url", "is not a Git URL"),
        ({**good, "rules": "branch main"}, "rules", "is not KIND PATTERN TAG"),
        ({**good, "args": "NOEQUALS"}, "args", "is not KEY=VALUE"),
        ({**good, "schedule": "2"}, "schedule", "between 5 and 44640"),
        ({**good, "timeout": "ten"}, "timeout", "whole number"),
        ({**good, "known_hosts": "nonsense"}, "known_hosts", "Line 1 of the known hosts"),
        ({**good, "deploy_key": "not a key"}, "deploy_key", "key"),
    ]
    for data, field, message in cases:
        bad = submit(client, page, f"{page}/settings", data)
        assert bad.status_code == 422, (field, bad.status_code)
        error = re.search(rf'id="source-{field}-error">([^<]*)<', bad.text)
        assert error and message in error.group(1), (field, bad.text[:200])
        assert 'value="https://git.example.com/carol/app.git"' in bad.text or field == "url"
    assert not session.scalars(select(BuildSource)).all()  # nothing half-saved

    # Before any source: starting a build is refused above the form, nothing queued.
    early = submit(client, page, page, {"ref": "main"})
    assert early.status_code == 422 and "has no build source" in early.text
    submit(client, page, f"{page}/settings", good)
    wrong_ref = submit(client, page, page, {"ref": "no such/..ref"})
    assert wrong_ref.status_code == 422 and 'id="build-ref-error"' in wrong_ref.text
    wrong_sha = submit(client, page, page, {"ref": "main", "commit": "abc"})
    assert wrong_sha.status_code == 422 and 'id="build-commit-error"' in wrong_sha.text
    assert 'value="abc"' in wrong_sha.text  # the input is kept
    assert not session.scalars(select(Build)).all()

    # Canceling a finished build: the refusal is said on the build's page.
    started = submit(client, page, page, {"ref": "main"})
    build = session.scalars(select(Build)).one()
    build.status = "succeeded"
    session.commit()
    refused = submit(client, f"{page}/{build.id}", f"{page}/{build.id}/cancel")
    assert started.status_code == 200
    assert refused.status_code == 200 and refused.url.path == f"{page}/{build.id}"
    assert "The build already succeeded" in refused.text
