"""The sync metadata API (``/-/sync``) and presigned chunk transfer (``/-/chunks``) against a real
dev cluster, through plain HTTP (aiohttp), as the sync daemon uses them.

One cluster serves the module. Users and device tokens are made by opening the cluster's metadata
file with the stores (as ``coffer sync user/token`` does). Covers the upload -> mark -> commit ->
download round trip (a 5 MiB chunk spans two storage chunks), BadDigest, tampered and expired URLs,
conflicted copies, changes paging and the long poll, folders, move/delete/restore, and issue 4's
acceptance 7 (another user's token gets 403 and cannot learn whether a chunk exists).
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import os
import re
import urllib.parse
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import botocore.exceptions
import pytest

from frontend.sync.presign import SYNC_PRESIGN_OWNER, presign_url
from metadata.sqlite_store import SqliteMetadataStore
from metadata.sqlite_sync_store import SqliteSyncStore
from tests.fixtures.cluster import DevCluster

pytestmark = [pytest.mark.system, pytest.mark.coffer_cluster(nodes=14, pg_count=64)]

MiB = 1024 * 1024
T = TypeVar("T")


def run(coroutine_function: Callable[[aiohttp.ClientSession], Awaitable[T]]) -> T:
    """Run ``coroutine_function(session)`` on a fresh event loop with one client session."""
    async def main() -> T:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
            return await coroutine_function(session)
    return asyncio.run(main())


@dataclass(frozen=True)
class Accounts:
    """Tokens: alice on two devices (laptop, phone), bob on one."""

    alice_laptop: str
    alice_phone: str
    bob: str


@pytest.fixture(scope="module")
def metadata_path(cluster: DevCluster) -> str:
    return str(cluster.data_dir / "metadata.sqlite3")


@pytest.fixture(scope="module")
def accounts(metadata_path: str) -> Iterator[Accounts]:
    metadata = SqliteMetadataStore(metadata_path)
    store = SqliteSyncStore(metadata)
    try:
        store.create_user("alice")
        store.create_user("bob")
        yield Accounts(alice_laptop=store.create_device("alice", "laptop")[1],
                       alice_phone=store.create_device("alice", "phone")[1],
                       bob=store.create_device("bob", "laptop")[1])
    finally:
        metadata.close()


class Api:
    """Sync API calls with one token; ``call`` checks the status and returns the JSON answer."""

    def __init__(self, session: aiohttp.ClientSession, endpoint: str, token: str | None) -> None:
        self.session = session
        self.endpoint = endpoint
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def call(self, method: str, path: str, expect: int = 200, body: Any = None,
                   params: dict[str, str] | None = None) -> dict[str, Any]:
        async with self.session.request(method, f"{self.endpoint}/-/sync{path}", json=body, params=params,
                                        headers=self.headers) as response:
            answer = await response.json()
            assert response.status == expect, (response.status, answer)
            assert isinstance(answer, dict)
            return answer

    async def put_chunk(self, url: str, data: bytes, expect: int = 200, expect100: bool = False) -> str:
        """PUT to a presigned URL as given (no re-encoding); returns the response body text."""
        async with self.session.put(aiohttp.client.URL(url, encoded=True), data=data,
                                    expect100=expect100) as response:
            text = await response.text()
            assert response.status == expect, (response.status, text)
            return text

    async def get_chunk(self, url: str, expect: int = 200) -> bytes:
        async with self.session.get(aiohttp.client.URL(url, encoded=True)) as response:
            data = await response.read()
            assert response.status == expect, (response.status, data[:500])
            return data

    async def upload_file(self, path: str, chunks: list[bytes], base_version: int | None = None,
                          expect_conflict: bool = False) -> dict[str, Any]:
        """POST /files, PUT every missing chunk, commit; returns the commit answer."""
        session = await self.call("POST", "/files", 201, {
            "path": path, "size": sum(map(len, chunks)), "base_version": base_version,
            "chunks": [{"hash": sha256(chunk), "size": len(chunk)} for chunk in chunks]})
        by_hash = {sha256(chunk): chunk for chunk in chunks}
        for missing in session["missing"]:
            await self.put_chunk(missing["url"], by_hash[missing["hash"]])
        committed = await self.call("POST", f"/files/{session['upload_id']}:commit")
        assert committed["conflict"] is expect_conflict
        return committed

    async def download(self, file_id: int, version: int | None = None) -> bytes:
        params = {"version": str(version)} if version is not None else None
        described = await self.call("GET", f"/files/{file_id}", params=params)
        pieces = []
        for chunk in described["chunks"]:
            data = await self.get_chunk(chunk["url"])
            assert sha256(data) == chunk["hash"] and len(data) == chunk["size"]
            pieces.append(data)
        return b"".join(pieces)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def s3_error_code(xml: str) -> str:
    match = re.search(r"<Code>([^<]+)</Code>", xml)
    assert match, xml
    return match.group(1)


def presign_key(metadata_path: str) -> tuple[str, str]:
    metadata = SqliteMetadataStore(metadata_path)
    try:
        key = next(key for key in metadata.list_access_keys() if key.owner == SYNC_PRESIGN_OWNER)
    finally:
        metadata.close()
    return key.access_key_id, key.secret_key


# --- the round trip ------------------------------------------------------------------------------

def test_upload_mark_commit_download(cluster: DevCluster, accounts: Accounts, metadata_path: str) -> None:
    big, small, tail = os.urandom(5 * MiB), os.urandom(MiB), os.urandom(100_000)
    chunks = [big, small, big, tail]  # a repeated chunk is asked for once

    async def scenario(session: aiohttp.ClientSession) -> None:
        alice = Api(session, cluster.endpoint, accounts.alice_laptop)
        assert (await alice.call("GET", "/account"))["user"] == "alice"
        begun = await alice.call("POST", "/files", 201, {
            "path": "docs/report.bin", "size": sum(map(len, chunks)), "base_version": None,
            "chunks": [{"hash": sha256(chunk), "size": len(chunk)} for chunk in chunks]})
        assert begun["file_id"] is None
        assert [item["hash"] for item in begun["missing"]] == [sha256(big), sha256(small), sha256(tail)]
        assert begun["url_expires_in"] == 900
        upload_id = begun["upload_id"]

        refused = await alice.call("POST", f"/files/{upload_id}:commit", 409)
        assert refused["error"] == "ChunksMissing" and len(refused["missing"]) == 3
        not_yet = await alice.call("POST", f"/files/{upload_id}/chunks/{sha256(big)}", 409)
        assert not_yet["error"] == "ChunksMissing"

        by_hash = {sha256(chunk): chunk for chunk in chunks}
        for missing in begun["missing"][:2]:
            await alice.put_chunk(missing["url"], by_hash[missing["hash"]], expect100=True)
        marked = await alice.call("POST", f"/files/{upload_id}/chunks/{sha256(big)}")
        assert marked == {"hash": sha256(big), "uploaded": True, "missing": 1}
        # The resume call lists only what is left, with a fresh URL.
        resumed = await alice.call("GET", f"/files/{upload_id}/chunks")
        assert resumed["state"] == "open"
        assert [item["hash"] for item in resumed["missing"]] == [sha256(tail)]
        assert sorted(resumed["uploaded"]) == sorted([sha256(big), sha256(small)])
        await alice.put_chunk(resumed["missing"][0]["url"], tail)
        # A second PUT of an uploaded chunk is accepted and not stored again.
        await alice.put_chunk(begun["missing"][0]["url"], big)

        committed = await alice.call("POST", f"/files/{upload_id}:commit")
        assert committed["conflict"] is False and committed["path"] == "docs/report.bin"
        assert await alice.call("POST", f"/files/{upload_id}:commit") == committed  # idempotent
        assert (await alice.call("GET", f"/files/{upload_id}/chunks"))["state"] == "committed"

        described = await alice.call("GET", f"/files/{committed['file_id']}")
        assert described["kind"] == "file" and not described["deleted"]
        assert described["current_version"] == described["version_id"] == committed["version_id"]
        assert described["size"] == sum(map(len, chunks))
        assert [version["version_id"] for version in described["versions"]] == [committed["version_id"]]
        assert described["versions"][0]["device"] == "laptop"
        assert await alice.download(committed["file_id"]) == b"".join(chunks)
        by_path = await alice.call("GET", "/files", params={"path": "docs/report.bin"})
        assert by_path["file_id"] == committed["file_id"]
        await alice.call("GET", "/files", 404, params={"path": "docs/nothing.bin"})
        # The same content again: the namespace holds every chunk, nothing to upload.
        again = await alice.call("POST", "/files", 201, {
            "path": "docs/copy.bin", "size": sum(map(len, chunks)), "base_version": None,
            "chunks": [{"hash": sha256(chunk), "size": len(chunk)} for chunk in chunks]})
        assert again["missing"] == []

    run(scenario)
    # The 5 MiB sync chunk is stored as two storage chunks (4 MiB + 1 MiB).
    metadata = SqliteMetadataStore(metadata_path)
    try:
        refs = SqliteSyncStore(metadata).storage_chunks_of(sha256(big))
    finally:
        metadata.close()
    assert refs is not None and [ref.size for ref in refs] == [4 * MiB, MiB]


def test_wrong_body_is_bad_digest_and_nothing_is_recorded(cluster: DevCluster, accounts: Accounts,
                                                          metadata_path: str) -> None:
    data = os.urandom(200_000)

    async def scenario(session: aiohttp.ClientSession) -> None:
        alice = Api(session, cluster.endpoint, accounts.alice_laptop)
        begun = await alice.call("POST", "/files", 201, {
            "path": "bad.bin", "size": len(data), "base_version": None,
            "chunks": [{"hash": sha256(data), "size": len(data)}]})
        url = begun["missing"][0]["url"]
        wrong = bytearray(data)
        wrong[1000] ^= 1
        assert s3_error_code(await alice.put_chunk(url, bytes(wrong), expect=400)) == "BadDigest"
        assert s3_error_code(await alice.put_chunk(url, data[:-1], expect=400)) == "InvalidArgument"
        state = await alice.call("GET", f"/files/{begun['upload_id']}/chunks")
        assert state["uploaded"] == [] and len(state["missing"]) == 1
        await alice.call("POST", f"/files/{begun['upload_id']}:commit", 409)

    run(scenario)
    metadata = SqliteMetadataStore(metadata_path)
    try:
        assert SqliteSyncStore(metadata).storage_chunks_of(sha256(data)) is None
    finally:
        metadata.close()


def test_tampered_and_expired_urls_are_refused(cluster: DevCluster, accounts: Accounts,
                                               metadata_path: str) -> None:
    data = os.urandom(50_000)
    other = os.urandom(50_000)

    async def scenario(session: aiohttp.ClientSession) -> None:
        alice = Api(session, cluster.endpoint, accounts.alice_laptop)
        begun = await alice.call("POST", "/files", 201, {
            "path": "tamper.bin", "size": len(data), "base_version": None,
            "chunks": [{"hash": sha256(data), "size": len(data)}]})
        url = begun["missing"][0]["url"]
        # Another chunk name, another session, or a longer lifetime: the signature no longer fits.
        for tampered in (url.replace(sha256(data), sha256(other)),
                         re.sub(r"upload=u[0-9a-f]+", "upload=u" + "0" * 24, url),
                         url.replace("X-Amz-Expires=900", "X-Amz-Expires=9000")):
            body = other if sha256(other) in tampered else data
            assert s3_error_code(await alice.put_chunk(tampered, body, expect=403)) == "SignatureDoesNotMatch"
        # With Expect: 100-continue the refusal comes before the body.
        tampered = url.replace(sha256(data), sha256(other))
        assert s3_error_code(await alice.put_chunk(tampered, other, expect=403, expect100=True)) == \
            "SignatureDoesNotMatch"
        # A correctly signed URL past its lifetime.
        access_key, secret = presign_key(metadata_path)
        parts = urllib.parse.urlsplit(url)
        signed_long_ago = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=1000)
        expired = presign_url("PUT", f"{parts.scheme}://{parts.netloc}", parts.path,
                              {"upload": begun["upload_id"]}, access_key, secret, cluster.region, 900,
                              now=signed_long_ago)
        assert s3_error_code(await alice.put_chunk(expired, data, expect=403)) == "AccessDenied"
        # Without any signature.
        assert s3_error_code(await alice.put_chunk(f"{cluster.endpoint}{parts.path}?upload={begun['upload_id']}",
                                                   data, expect=403)) == "AccessDenied"
        assert (await alice.call("GET", f"/files/{begun['upload_id']}/chunks"))["uploaded"] == []

        committed = await alice.upload_file("tamper-ok.bin", [data])
        chunk_url = (await alice.call("GET", f"/files/{committed['file_id']}"))["chunks"][0]["url"]
        assert await alice.get_chunk(chunk_url) == data
        moved = re.sub(r"namespace=\d+", "namespace=999", chunk_url)
        await alice.get_chunk(moved, expect=403)
        # A GET URL does not authorize a PUT.
        assert s3_error_code(await alice.put_chunk(chunk_url, data, expect=403)) == "SignatureDoesNotMatch"

    run(scenario)


def test_stale_base_is_stored_as_a_conflicted_copy(cluster: DevCluster, accounts: Accounts) -> None:
    async def scenario(session: aiohttp.ClientSession) -> None:
        laptop = Api(session, cluster.endpoint, accounts.alice_laptop)
        phone = Api(session, cluster.endpoint, accounts.alice_phone)
        first = await laptop.upload_file("notes/todo.txt", [b"one"])
        second = await laptop.upload_file("notes/todo.txt", [b"two"], base_version=first["version_id"])
        assert second["file_id"] == first["file_id"]
        stale = await phone.upload_file("notes/todo.txt", [b"phone"], base_version=first["version_id"],
                                        expect_conflict=True)
        today = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
        assert stale["path"] == f"notes/todo (phone's conflicted copy {today}).txt"
        assert stale["conflict_of"] == "notes/todo.txt"
        assert stale["file_id"] != first["file_id"]
        # No base while a live file is at the path: also a conflict, numbered after the first copy.
        fresh = await phone.upload_file("notes/todo.txt", [b"fresh"], expect_conflict=True)
        assert fresh["path"] == f"notes/todo (phone's conflicted copy {today}) (2).txt"
        assert await laptop.download(first["file_id"]) == b"two"
        assert await laptop.download(stale["file_id"]) == b"phone"

    run(scenario)


# --- the journal -----------------------------------------------------------------------------------

def test_changes_paging_cursor_and_long_poll(cluster: DevCluster, accounts: Accounts) -> None:
    async def scenario(session: aiohttp.ClientSession) -> None:
        alice = Api(session, cluster.endpoint, accounts.alice_laptop)
        for name in ("a", "b", "c"):
            await alice.upload_file(f"journal/{name}.txt", [name.encode()])
        # Page through everything one entry at a time.
        seen: list[dict[str, Any]] = []
        cursor = None
        while True:
            params = {"limit": "1", **({"since": cursor} if cursor else {})}
            page = await alice.call("GET", "/changes", params=params)
            seen.extend(page["entries"])
            cursor = page["cursor"]
            if not page["has_more"]:
                break
        paths = [entry["path"] for entry in seen]
        assert {"journal/a.txt", "journal/b.txt", "journal/c.txt"} <= set(paths)
        assert all(entry["action"] in ("commit", "mkdir", "move", "delete", "restore") for entry in seen)
        commit_entry = next(entry for entry in seen if entry["path"] == "journal/c.txt")
        assert commit_entry["chunks"] == [{"hash": sha256(b"c"), "size": 1}]
        assert commit_entry["device"] == "laptop" and commit_entry["kind"] == "file"
        # Nothing new: an immediate answer, and after a short wait the same cursor.
        empty = await alice.call("GET", "/changes", params={"since": cursor})
        assert empty["entries"] == [] and empty["cursor"] == cursor and not empty["has_more"]
        timed_out = await alice.call("GET", "/changes", params={"since": cursor, "wait": "1"})
        assert timed_out["entries"] == [] and timed_out["cursor"] == cursor

        # A long poll returns with the commit made while it waits (not with the empty timeout answer).
        poll = asyncio.create_task(alice.call("GET", "/changes", params={"since": cursor, "wait": "50"}))
        await asyncio.sleep(0.5)
        assert not poll.done()
        await alice.upload_file("journal/d.txt", [b"d"])
        woken = await asyncio.wait_for(poll, 55)
        assert [entry["path"] for entry in woken["entries"]] == ["journal/d.txt"]
        assert woken["cursor"] != cursor

        tree = await alice.call("GET", "/tree")
        tree_paths = {entry["path"]: entry for entry in tree["entries"]}
        assert tree_paths["journal/d.txt"]["action"] == "commit"
        assert tree["cursor"] == woken["cursor"]

        await alice.call("GET", "/changes", 400, params={"since": "garbage"})
        await alice.call("GET", "/changes", 400, params={"limit": "0"})

    run(scenario)


def test_folders_move_delete_restore(cluster: DevCluster, accounts: Accounts) -> None:
    async def scenario(session: aiohttp.ClientSession) -> None:
        alice = Api(session, cluster.endpoint, accounts.alice_laptop)
        folder = await alice.call("POST", "/folders", 201, {"path": "project"})
        again = await alice.call("POST", "/folders", 200, {"path": "project"})
        assert again["file_id"] == folder["file_id"]
        v1 = await alice.upload_file("project/main.py", [b"print(1)\n"])
        v2 = await alice.upload_file("project/main.py", [b"print(2)\n"], base_version=v1["version_id"])
        await alice.call("POST", "/folders", 409, {"path": "project/main.py"})

        # Move the folder: the file inside follows, with one journal entry each.
        before = (await alice.call("GET", "/tree"))["cursor"]
        moved = await alice.call("POST", f"/files/{folder['file_id']}:move", body={"to": "renamed"})
        changes = await alice.call("GET", "/changes", params={"since": before})
        assert {(entry["old_path"], entry["path"]) for entry in changes["entries"]} == {
            ("project", "renamed"), ("project/main.py", "renamed/main.py")}
        assert all(entry["action"] == "move" for entry in changes["entries"])
        assert changes["cursor"] == moved["cursor"]
        assert (await alice.call("GET", f"/files/{v1['file_id']}"))["path"] == "renamed/main.py"
        await alice.upload_file("other.txt", [b"x"])
        taken = await alice.call("POST", f"/files/{v1['file_id']}:move", 409, body={"to": "other.txt"})
        assert taken["error"] == "PathExists"
        await alice.call("POST", f"/files/{v1['file_id']}:move", 400, body={"to": "../escape"})
        await alice.call("POST", f"/files/{v1['file_id']}:move", 400, body={"to": 5})

        # Conditional deletes: a stale version or a non-empty folder is refused and nothing changes.
        stale = await alice.call("DELETE", f"/files/{v1['file_id']}", 412, params={"version": str(v1["version_id"])})
        assert stale["error"] == "PreconditionFailed"
        await alice.call("DELETE", f"/files/{folder['file_id']}", 412, params={"if_empty": "true"})
        await alice.call("DELETE", f"/files/{v1['file_id']}", 400, params={"version": "latest"})
        assert (await alice.call("GET", f"/files/{v1['file_id']}"))["deleted"] is False

        # Delete the folder: everything under it is soft-deleted; deleting again changes nothing.
        deleted = await alice.call("DELETE", f"/files/{folder['file_id']}")
        file_state = await alice.call("GET", f"/files/{v1['file_id']}")
        assert file_state["deleted"] is True
        assert [version["version_id"] for version in file_state["versions"]] == [v1["version_id"], v2["version_id"]]
        assert (await alice.call("DELETE", f"/files/{folder['file_id']}"))["cursor"] == deleted["cursor"]
        tree_paths = {entry["path"] for entry in (await alice.call("GET", "/tree"))["entries"]}
        assert "renamed/main.py" not in tree_paths and "renamed" not in tree_paths

        # Restore the first version: undeleted, a third version with the first content.
        restored = await alice.call("POST", f"/files/{v1['file_id']}:restore", body={"version_id": v1["version_id"]})
        assert restored["path"] == "renamed/main.py"
        state = await alice.call("GET", f"/files/{v1['file_id']}")
        assert state["deleted"] is False and state["current_version"] == restored["version_id"]
        assert len(state["versions"]) == 3
        assert await alice.download(v1["file_id"]) == b"print(1)\n"
        assert await alice.download(v1["file_id"], version=v2["version_id"]) == b"print(2)\n"
        await alice.call("POST", f"/files/{v1['file_id']}:restore", 404, body={"version_id": 10**9})
        await alice.call("POST", f"/files/{v1['file_id']}:explode", 404, body={})

    run(scenario)


# --- isolation and authentication ------------------------------------------------------------------

def test_another_users_token_is_forbidden_and_learns_nothing(cluster: DevCluster, accounts: Accounts) -> None:
    secret_chunk = os.urandom(30_000)

    async def scenario(session: aiohttp.ClientSession) -> None:
        alice = Api(session, cluster.endpoint, accounts.alice_laptop)
        bob = Api(session, cluster.endpoint, accounts.bob)
        committed = await alice.upload_file("private/diary.txt", [secret_chunk])
        pending = await alice.call("POST", "/files", 201, {
            "path": "private/draft.txt", "size": 3, "base_version": None,
            "chunks": [{"hash": sha256(b"abc"), "size": 3}]})
        file_id, upload_id = committed["file_id"], pending["upload_id"]
        forbidden = [
            await bob.call("GET", f"/files/{file_id}", 403),
            await bob.call("DELETE", f"/files/{file_id}", 403),
            await bob.call("POST", f"/files/{file_id}:move", 403, body={"to": "mine.txt"}),
            await bob.call("POST", f"/files/{file_id}:restore", 403, body={"version_id": committed["version_id"]}),
            await bob.call("GET", f"/files/{upload_id}/chunks", 403),
            await bob.call("POST", f"/files/{upload_id}/chunks/{sha256(b'abc')}", 403),
            await bob.call("POST", f"/files/{upload_id}:commit", 403),
            await bob.call("GET", "/changes", 403, params={"since": committed["cursor"]}),
            await bob.call("POST", "/files", 403, {
                "path": "x", "size": 1, "base_version": None, "namespace_id": 10**6,
                "chunks": [{"hash": sha256(b"x"), "size": 1}]}),
            await bob.call("POST", "/files", 403, {
                "path": "x", "size": 1, "base_version": committed["version_id"],
                "chunks": [{"hash": sha256(b"x"), "size": 1}]}),
        ]
        assert {answer["error"] for answer in forbidden} == {"Forbidden"}
        # Bob's file with a chunk alice stores: still listed as missing (no existence leak).
        probe = await bob.call("POST", "/files", 201, {
            "path": "probe.bin", "size": len(secret_chunk), "base_version": None,
            "chunks": [{"hash": sha256(secret_chunk), "size": len(secret_chunk)}]})
        assert [item["hash"] for item in probe["missing"]] == [sha256(secret_chunk)]
        await bob.call("POST", f"/files/{probe['upload_id']}:commit", 409)
        # Bob's tree and journal show nothing of alice's.
        assert all(not entry["path"].startswith("private") for entry in (await bob.call("GET", "/tree"))["entries"])
        # Uploading the bytes himself works (storage dedups globally, he proved he has them).
        await bob.put_chunk(probe["missing"][0]["url"], secret_chunk)
        mine = await bob.call("POST", f"/files/{probe['upload_id']}:commit")
        assert await bob.download(mine["file_id"]) == secret_chunk

        for token in (None, "cst_not-a-token"):
            unauthorized = await Api(session, cluster.endpoint, token).call("GET", "/account", 401)
            assert unauthorized["error"] == "Unauthorized"
        invalid = await alice.call("POST", "/files", 400, {"path": "a", "size": 2, "base_version": None,
                                                           "chunks": [{"hash": sha256(b"a"), "size": 1}]})
        assert invalid["error"] == "InvalidRequest"
        bad_path = await alice.call("POST", "/files", 400, {"path": "/abs", "size": 0, "base_version": None,
                                                            "chunks": []})
        assert bad_path["error"] == "InvalidSyncPath"
        async with session.post(f"{cluster.endpoint}/-/sync/files", data=b"{not json",
                                headers=alice.headers) as response:
            assert response.status == 400

    run(scenario)


def test_s3_requests_signed_with_the_presign_key_are_refused(cluster: DevCluster, accounts: Accounts,
                                                             metadata_path: str) -> None:
    access_key, secret = presign_key(metadata_path)
    import boto3
    from botocore.config import Config

    client = boto3.client("s3", endpoint_url=cluster.endpoint, region_name=cluster.region,
                          aws_access_key_id=access_key, aws_secret_access_key=secret,
                          config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
    with pytest.raises(botocore.exceptions.ClientError) as failure:
        client.list_buckets()
    assert failure.value.response["Error"]["Code"] == "AccessDenied"
    assert failure.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    # The cluster's own key still works.
    cluster.s3_client().list_buckets()


def test_virtual_hosted_requests_stay_s3(cluster: DevCluster) -> None:
    async def scenario(session: aiohttp.ClientSession) -> None:
        async with session.get(f"{cluster.endpoint}/-/sync/account", headers={"Host": "bucket.localhost"}) as response:
            assert response.content_type == "application/xml"
            assert response.status == 403  # anonymous S3 request
        async with session.get(f"{cluster.endpoint}/-/sync/nothing") as response:
            assert response.status == 404 and (await response.json())["error"] == "NotFound"

    run(scenario)


def test_frontend_logged_no_unexpected_error(cluster: DevCluster) -> None:
    """Runs last: every failure above was an answered error, never an unhandled exception."""
    log = cluster.log("frontend")
    assert "frontend serving" in log  # the right log file
    assert "unexpected error" not in log, [line for line in log.splitlines() if "unexpected error" in line]
