"""`streamlab dashboard`: a live page of a running pipeline, in the browser.

- `feed.py`: where the data comes from, in plain Python (no Bokeh): `LiveFeed` subscribes to
  what `attach --publish` sends (outputs, `<prefix>/health`, `<prefix>/input`), `StoreFeed`
  follows a run store as it is written; both bounded.
- `page.py`: the Bokeh document drawn from a feed, polled at 10 Hz.
- `server.py`: the Bokeh server embedded in the command.
"""
