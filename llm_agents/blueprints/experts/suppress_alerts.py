"""Step functions of the expert blueprint suppress_alerts (one function per step)."""


def select_matches(intent):
    keys = list(intent["sources"]) + list(intent["hosts"])
    if keys:
        return {"matches": [{"attack": intent.get("attack"), "key": k} for k in keys]}
    if intent.get("attack"):
        return {"matches": [{"attack": intent["attack"], "key": None}]}
    raise ValueError("the intent names neither an attack class nor an address to suppress")


def emit_policy(matches, intent):
    return {"policy": {"suppress_alerts": list(matches), "expires_s": intent["expires_s"]}}
