"""Time zones from the tzdata package (the guest has no /usr/share/zoneinfo), and a codec
looked up by name at run time."""

import datetime
import zoneinfo


def main():
    when = datetime.datetime(2026, 7, 1, 12, tzinfo=datetime.UTC)
    for name in ("Europe/Paris", "Asia/Tokyo", "America/Sao_Paulo"):
        local = when.astimezone(zoneinfo.ZoneInfo(name))
        print(f"clock: {name} {local.isoformat()}", flush=True)
    print(f"clock: cp1252 {'café'.encode('cp1252')!r} utf-16 {len('é'.encode('utf-16'))}",
          flush=True)
    return 0
