"""Durable media: the copy of every generated video (and its poster) in our own storage,
and the signed URLs through which browsers and apps play it."""
