"""Only https URLs on public hosts may be forwarded to Seedance (no SSRF through us)."""

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic_core import PydanticCustomError

from app.kit.public_urls import MAX_URL_LENGTH, check_public_https_url, is_public_address

ACCEPTED = [
    "https://cdn.images.net/cat.png",
    "https://[64:ff9b::808:808]/a.png",  # NAT64 of 8.8.8.8
    "https://[2002:808:808::1]/a.png",  # 6to4 of 8.8.8.8
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
    # IPv6 forms that carry an IPv4 address (NAT64 reaches 10.0.0.1 on IPv6-only subnets)
    ("https://[64:ff9b::7f00:1]/x", "url_host_not_public"),
    ("https://[64:ff9b::a00:1]/x", "url_host_not_public"),
    ("https://[64:ff9b::a9fe:a9fe]/latest/meta-data/", "url_host_not_public"),
    ("https://[::7f00:1]/x", "url_host_not_public"),
    ("https://[2002:7f00:1::]/x", "url_host_not_public"),
    ("https://[2002:a9fe:a9fe::1]/x", "url_host_not_public"),
    ("https://[64:ff9b:1::a00:1]/x", "url_host_not_public"),
    ("https://[fec0::1]/x", "url_host_not_public"),
    ("https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/x", "url_host_not_public"),
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


PRIVATE_V4 = [
    ipaddress.IPv4Network(network)
    for network in (
        *("0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16"),
        *("172.16.0.0/12", "192.0.0.0/24", "192.168.0.0/16", "198.18.0.0/15", "224.0.0.0/4"),
    )
]


def embeddings(v4: ipaddress.IPv4Address) -> list[ipaddress.IPv6Address]:
    """Every IPv6 form a connection to `v4` can take."""
    n = int(v4)
    return [
        ipaddress.IPv6Address((0xFFFF << 32) | n),  # ::ffff:a.b.c.d, mapped
        ipaddress.IPv6Address(n),  # ::a.b.c.d, compatible (deprecated)
        ipaddress.IPv6Address((0x64FF9B << 96) | n),  # 64:ff9b::a.b.c.d, NAT64
        ipaddress.IPv6Address((0x2002 << 112) | (n << 80) | 1),  # 2002:a.b.c.d::1, 6to4
    ]


@settings(max_examples=300, deadline=None)
@given(network=st.sampled_from(PRIVATE_V4), offset=st.integers(min_value=0))
def test_no_ipv6_form_of_a_private_ipv4_address_is_public(
    network: ipaddress.IPv4Network, offset: int
) -> None:
    v4 = network[offset % network.num_addresses]
    assert not is_public_address(v4)
    for v6 in embeddings(v4):
        assert not is_public_address(v6), v6
        with pytest.raises(PydanticCustomError) as caught:
            check_public_https_url(f"https://[{v6}]/x")
        assert caught.value.type == "url_host_not_public"


@settings(max_examples=300, deadline=None)
@given(value=st.integers(min_value=0, max_value=2**32 - 1))
def test_an_ipv6_form_is_judged_as_the_ipv4_address_it_carries(value: int) -> None:
    v4 = ipaddress.IPv4Address(value)
    for v6 in embeddings(v4):
        assert is_public_address(v6) == is_public_address(v4), (v4, v6)
