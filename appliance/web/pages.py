"""The dashboard's pages. Each is a template whose script (under webroot/static/) talks to
the JSON API; no page carries inline script."""

from __future__ import annotations

from flask import Blueprint, current_app, redirect, render_template, url_for

from appliance.predict.states import RIG_STATES

bp = Blueprint("pages", __name__)

PAGES = {"live": "Live", "analytics": "Analytics", "alerts": "Alerts", "system": "System"}


@bp.get("/")
def index():
    return redirect(url_for("pages.page", name="live"))


@bp.get("/<any(live, analytics, alerts, system):name>")
def page(name: str):
    cfg = current_app.config["RIGTEL"]
    # the rig-state names go with the page (a data attribute), so the banner reads the
    # predictor's codes from the one list that defines them
    return render_template(f"{name}.html", page=name, pages=PAGES, rig_id=cfg.rig_id, rig_states=RIG_STATES)
