"""The outbound request log line: method, scheme, host, outcome, latency, ids; no path or query."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from service import outbound

SLACK = "https://hooks.slack.com/services/T0AAAAAAA/B0BBBBBBB/xxxxxxxxxxxxxxxxxxxxxxxx"
GCHAT = "https://chat.googleapis.com/v1/spaces/AAAA/messages?key=sekrit-key&token=sekrit-token"


@pytest.mark.parametrize("url", [SLACK, GCHAT])
def test_the_line_names_the_host_but_never_the_path_or_query(url: str) -> None:
    line = outbound.describe("POST", url, 200, None, 12.4, {"delivery": "dlv_1"})
    host = urlsplit(url).hostname
    assert line == f"POST https://{host} 200 12 ms delivery=dlv_1"
    for secret in ("services", "T0AAAAAAA", "xxxx", "spaces", "key=", "sekrit", "?", "/v1"):
        assert secret not in line


def test_ports_ipv6_errors_and_empty_ids() -> None:
    url = "http://[2606:4700::1111]:8080/hook?token=t"
    ids = {"job": "job_1", "subscription": ""}
    line = outbound.describe("GET", url, None, "ConnectError: refused", 3.0, ids)
    assert line == "GET http://[2606:4700::1111]:8080 failed (ConnectError: refused) 3 ms job=job_1"
    assert "token" not in line and "/hook" not in line
