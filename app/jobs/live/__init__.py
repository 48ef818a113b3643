"""Live streams of job moves: one LISTEN per replica (`events`), a bounded inbox per
stream (`inbox`), the feeds that re-read the database only when a stream may have missed
something (`feed`), and the caps on open streams (`stream_slots`)."""
