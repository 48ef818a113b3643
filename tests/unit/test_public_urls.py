"""Only https URLs on public hosts may be forwarded to Seedance (no SSRF through us)."""

import pytest
from pydantic_core import PydanticCustomError

from app.kit.public_urls import MAX_URL_LENGTH, check_public_https_url

ACCEPTED = [
    "https://cdn.images.net/cat.png",
    "https://Example.COM/Path?q=1#frag",
    "https://a.co:8443/x.jpg",
    "https://8.8.8.8/a.png",
    "https://[2606:4700:4700::1111]/a.png",
    "https://xn--bcher-kva.de/book.jpg",
    "https://cdn.images.net./trailing-dot.png",
]

REJECTED = [
    ("http://cdn.images.net/cat.png", "url_not_https"),
    ("HTTPS://cdn.images.net/cat.png", "url_not_https"),
    ("Https://cdn.images.net/cat.png", "url_not_https"),
    ("ftp://cdn.images.net/cat.png", "url_not_https"),
    ("javascript:alert(1)", "url_not_https"),
    ("//cdn.images.net/cat.png", "url_not_https"),
    ("", "url_not_https"),
    ("https://user@cdn.images.net/cat.png", "url_has_credentials"),
    ("https://user:pw@cdn.images.net/cat.png", "url_has_credentials"),
    ("https://cdn.images.net@127.0.0.1/cat.png", "url_has_credentials"),
    ("https://localhost/cat.png", "url_host_not_public"),
    ("https://LOCALHOST./cat.png", "url_host_not_public"),
    ("https://api.localhost/cat.png", "url_host_not_public"),
    ("https://printer.local/cat.png", "url_host_not_public"),
    ("https://metadata.google.internal/computeMetadata/v1/", "url_host_not_public"),
    ("https://router.home.arpa/x", "url_host_not_public"),
    ("https://intranet/cat.png", "url_host_not_public"),
    ("https://127.0.0.1/cat.png", "url_host_not_public"),
    ("https://0.0.0.0/cat.png", "url_host_not_public"),
    ("https://10.1.2.3/cat.png", "url_host_not_public"),
    ("https://172.16.0.1/cat.png", "url_host_not_public"),
    ("https://192.168.1.10/cat.png", "url_host_not_public"),
    ("https://100.64.0.1/cat.png", "url_host_not_public"),
    ("https://169.254.169.254/latest/meta-data/", "url_host_not_public"),
    ("https://224.0.0.1/x", "url_host_not_public"),
    ("https://[::1]/cat.png", "url_host_not_public"),
    ("https://[fe80::1]/cat.png", "url_host_not_public"),
    ("https://[fd00::1]/cat.png", "url_host_not_public"),
    ("https://[::ffff:127.0.0.1]/cat.png", "url_host_not_public"),
    ("https://[::ffff:169.254.169.254]/x", "url_host_not_public"),
    ("https://2130706433/cat.png", "invalid_url"),
    ("https://127.1/cat.png", "invalid_url"),
    ("https://0x7f000001/cat.png", "url_host_not_public"),
    ("https://0x7f.0.0.1/cat.png", "url_host_not_public"),
    ("https://0177.0.0.1/cat.png", "invalid_url"),
    ("https://bücher.de/cat.png", "invalid_url"),
    ("https://ex_ample.com/cat.png", "invalid_url"),
    ("https://-bad.com/cat.png", "invalid_url"),
    ("https:///cat.png", "invalid_url"),
    ("https://cdn.images.net/a b.png", "invalid_url"),
    ("https://cdn.images.net/\x00.png", "invalid_url"),
    ("https://cdn.images.net:99999/x", "invalid_url"),
    ("https://cdn.images.net:0/x", "invalid_url"),
    ("https://[::1/x", "invalid_url"),
    ("https://cdn.images.net/" + "a" * MAX_URL_LENGTH, "too_long"),
]


@pytest.mark.parametrize("url", ACCEPTED)
def test_public_https_urls_are_accepted(url: str) -> None:
    assert check_public_https_url(url) == url


@pytest.mark.parametrize(("url", "code"), REJECTED)
def test_unsafe_urls_are_rejected_with_a_precise_code(url: str, code: str) -> None:
    with pytest.raises(PydanticCustomError) as caught:
        check_public_https_url(url)
    assert caught.value.type == code
