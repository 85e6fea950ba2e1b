"""``inspect``: docker-shaped JSON for containers and images.

Owns: the JSON shapes, notably ``GraphDriver.Data.{LowerDir,UpperDir,MergedDir,WorkDir}``
(the seed's view of the storage driver), ``State`` and ``Mounts``. Read-only.
"""

from __future__ import annotations

from typing import Any

from . import volumes
from .container import Container, is_mountpoint


def container_json(c: Container) -> dict[str, Any]:
    """``docker inspect CONTAINER``-shaped record."""
    cfg, st = c.config, c.state()
    argv = list(cfg.get("Argv", []))
    lim = cfg.get("Limits") or {}
    policy, _, count = str(cfg.get("RestartPolicy", "no")).partition(":")
    mounts = []
    for m in cfg.get("Mounts", []):
        vol = m.get("Type") == "volume"
        mounts.append({
            "Type": m.get("Type"), "Name": m.get("Source") if vol else "",
            "Source": volumes.volume_path(c.root, m["Source"]) if vol else m.get("Source"),
            "Destination": m.get("Destination"), "Driver": "local" if vol else "",
            "Mode": "" if m.get("RW", True) else "ro", "RW": bool(m.get("RW", True)),
            "Propagation": "" if vol else "rprivate"})
    return {
        "Id": c.id,
        "Created": cfg.get("Created"),
        "Path": argv[0] if argv else "",
        "Args": argv[1:],
        "State": {
            "Status": st.get("Status"), "Running": st["Running"], "Paused": False,
            "Restarting": st.get("Status") == "restarting",
            "OOMKilled": bool(st.get("OOMKilled")), "Dead": False,
            "Pid": int(st.get("Pid") or 0) if st["Running"] else 0,
            "ExitCode": int(st.get("ExitCode") or 0), "Error": st.get("Error", ""),
            "StartedAt": st.get("StartedAt", ""), "FinishedAt": st.get("FinishedAt", ""),
        },
        "Image": cfg.get("ImageId") or cfg.get("Image"),
        "Name": "/" + c.name,
        "RestartCount": int(st.get("RestartCount") or 0),
        "Driver": "cowfs",
        "LogPath": c.log_path,
        "HostConfig": {
            "Memory": lim.get("Memory") or 0,
            "NanoCpus": int((lim.get("Cpus") or 0) * 1e9),
            "PidsLimit": lim.get("Pids"),
            "RestartPolicy": {"Name": policy, "MaximumRetryCount": int(count or 0)},
            "AutoRemove": bool(cfg.get("AutoRemove")),
            "Binds": [f"{m['Source']}:{m['Destination']}" + ("" if m.get("RW", True) else ":ro")
                      for m in cfg.get("Mounts", [])],
        },
        "GraphDriver": {
            "Name": "cowfs",
            "Data": {
                "LowerDir": ":".join(c.lowerdirs),
                "UpperDir": c.upper,
                "MergedDir": c.merged,
                "WorkDir": c.work,
                "Backend": st.get("Backend") or cfg.get("Backend", "auto"),
                "Mounted": is_mountpoint(c.merged),
            },
        },
        "Mounts": mounts,
        "Config": {
            "Hostname": cfg.get("Hostname"), "User": cfg.get("User", ""),
            "Tty": bool(cfg.get("Tty")), "OpenStdin": bool(cfg.get("OpenStdin")),
            "Env": list(cfg.get("Env", [])), "Cmd": argv, "Image": cfg.get("Image"),
            "WorkingDir": cfg.get("WorkingDir", "/"),
        },
    }


def image_json(store: Any, image: Any) -> dict[str, Any]:
    """``docker image inspect``-shaped record (top layer as UpperDir, the rest Lower)."""
    dirs = list(store.layer_dirs(image))
    cfg = image.config if isinstance(image.config, dict) else {}
    data: dict[str, Any] = {"UpperDir": dirs[0] if dirs else "",
                            "LowerDir": ":".join(dirs[1:])}
    return {
        "Id": image.id,
        "RepoTags": list(image.tags),
        "Created": image.created,
        "Size": image.size,
        "Architecture": cfg.get("architecture", ""),
        "Os": cfg.get("os", ""),
        "Config": cfg.get("config", {}),
        "RootFS": {"Type": "layers", "Layers": list(image.diff_ids)},
        "GraphDriver": {"Name": "cowfs", "Data": data},
    }
