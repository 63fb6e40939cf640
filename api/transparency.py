"""The public transparency notice: what each sensor measures and does not, why, for how long, who to ask.

This is the information the CNIL expects a city to give residents about sensors in
public space (RGPD art. 12-14): the controller and contact, purposes and legal basis,
what is and is not captured, retention periods, rights and how to exercise them.
Served as JSON (``/v1/transparency``) and as a page in French or English
(``/transparency?lang=fr|en``), both built from the same model.
"""

from __future__ import annotations

import html
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from api.settings import ApiSettings

Lang = Literal["fr", "en"]

TEXT: dict[str, dict[str, object]] = {
    "fr": {
        "title": "Capteurs acoustiques de la ville : information des habitants",
        "measures": ["Niveaux sonores moyens et maximaux en dB(A) (LAeq, LAmax, LA10/50/90)", "Niveaux par bande de tiers d'octave",
                     "Indicateurs journaliers Lden", "Nombre de klaxons et de sirènes par heure"],
        "does_not": ["Aucun enregistrement : le son est analysé en mémoire, seconde par seconde, puis effacé",
                     "Aucune écoute : personne ne peut entendre ce que capte un capteur", "Aucune parole n'est analysée, reconnue ou transcrite",
                     "Aucune identification de personnes, de voix ou de véhicules", "Aucun son n'est transmis : seuls des chiffres agrégés quittent le capteur"],
        "purposes": ["Connaître l'exposition au bruit (directive 2002/49/CE, cartes de bruit)", "Évaluer les aménagements et les plans de prévention du bruit",
                     "Publier des données ouvertes sur le bruit"],
        "rights": "Vous disposez des droits d'accès, de rectification, d'opposition et de limitation (RGPD art. 15 à 21). "
                  "Les données publiées sont anonymes et agrégées. Pour toute question, écrivez au délégué à la protection des données ; "
                  "vous pouvez aussi introduire une réclamation auprès de la CNIL.",
        "labels": {"sensors": "Capteurs", "measures": "Ce qui est mesuré", "does_not": "Ce qui n'est jamais fait", "purposes": "Finalités",
                   "legal_basis": "Base légale", "retention": "Durées de conservation", "controller": "Responsable de traitement",
                   "rights": "Vos droits", "contact": "Contact", "raw": "niveaux à la seconde", "agg": "niveaux agrégés", "days": "jours",
                   "other": "Autres traitements déclarés", "cnil": "Réclamation CNIL"},
    },
    "en": {
        "title": "The city's acoustic sensors: information for residents",
        "measures": ["Average and maximum sound levels in dB(A) (LAeq, LAmax, LA10/50/90)", "Third-octave band levels",
                     "Daily Lden indicators", "Number of car horns and sirens per hour"],
        "does_not": ["No recording: sound is analysed in memory, second by second, then discarded",
                     "No listening: nobody can hear what a sensor picks up", "No speech is analysed, recognised or transcribed",
                     "No identification of people, voices or vehicles", "No sound is transmitted: only aggregate numbers leave the sensor"],
        "purposes": ["Knowing noise exposure (Directive 2002/49/EC, noise maps)", "Assessing street works and noise action plans",
                     "Publishing open noise data"],
        "rights": "You have the rights of access, rectification, objection and restriction (GDPR art. 15-21). "
                  "Published data are anonymous aggregates. Write to the data protection officer with any question; "
                  "you may also lodge a complaint with the CNIL.",
        "labels": {"sensors": "Sensors", "measures": "What is measured", "does_not": "What is never done", "purposes": "Purposes",
                   "legal_basis": "Legal basis", "retention": "Retention periods", "controller": "Data controller",
                   "rights": "Your rights", "contact": "Contact", "raw": "1-second levels", "agg": "aggregated levels", "days": "days",
                   "other": "Other declared processing", "cnil": "CNIL complaint"},
    },
}


class SensorNotice(BaseModel):
    sensor_id: str
    name: str
    street: str | None = None
    latitude: float
    longitude: float
    active: bool


class TransparencyNotice(BaseModel):
    """Everything a resident should be told, in one document."""

    language: Lang
    title: str
    controller: str
    controller_address: str
    contact_email: str
    legal_basis: str
    purposes: list[str]
    measures: list[str]
    does_not: list[str] = Field(..., description="Commitments: no recording, no listening, no speech")
    retention_days: dict[str, int]
    rights: str
    cnil_complaint_url: str
    other_processing: str | None = None
    sensors: list[SensorNotice]


def build_notice(settings: ApiSettings, sensors: list[dict], lang: Lang) -> TransparencyNotice:
    t = settings.transparency
    text = TEXT[lang]
    return TransparencyNotice(
        language=lang, title=str(text["title"]), controller=t.controller, controller_address=t.controller_address,
        contact_email=t.contact_email, legal_basis=t.legal_basis, purposes=list(text["purposes"]),  # type: ignore[call-overload]
        measures=list(text["measures"]), does_not=list(text["does_not"]),  # type: ignore[call-overload]
        retention_days={"levels_1s": t.raw_retention_days, "aggregates": t.aggregate_retention_days},
        rights=str(text["rights"]), cnil_complaint_url=t.cnil_url, other_processing=t.other_processing_notice,
        sensors=[SensorNotice.model_validate(s) for s in sensors],
    )


def render_html(notice: TransparencyNotice) -> str:
    lab: dict[str, str] = TEXT[notice.language]["labels"]  # type: ignore[assignment]
    e = html.escape
    li = lambda items: "".join(f"<li>{e(i)}</li>" for i in items)  # noqa: E731
    rows = "".join(
        f"<tr><td>{e(s.sensor_id)}</td><td>{e(s.name)}</td><td>{e(s.street or '')}</td>"
        f"<td>{s.latitude:.5f}, {s.longitude:.5f}</td></tr>" for s in notice.sensors)
    other = f"<h2>{e(lab['other'])}</h2><p>{e(notice.other_processing)}</p>" if notice.other_processing else ""
    other_lang = "en" if notice.language == "fr" else "fr"
    return f"""<!doctype html><html lang="{notice.language}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>{e(notice.title)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:60rem;margin:auto;padding:1rem;line-height:1.5}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.2rem .5rem}}</style></head><body>
<p><a href="?lang={other_lang}">{'English' if other_lang == 'en' else 'Français'}</a></p>
<h1>{e(notice.title)}</h1>
<h2>{e(lab['does_not'])}</h2><ul id="does-not">{li(notice.does_not)}</ul>
<h2>{e(lab['measures'])}</h2><ul>{li(notice.measures)}</ul>
<h2>{e(lab['purposes'])}</h2><ul>{li(notice.purposes)}</ul>
<h2>{e(lab['legal_basis'])}</h2><p>{e(notice.legal_basis)}</p>
<h2>{e(lab['retention'])}</h2><ul><li>{e(lab['raw'])}: {notice.retention_days['levels_1s']} {e(lab['days'])}</li>
<li>{e(lab['agg'])}: {notice.retention_days['aggregates']} {e(lab['days'])}</li></ul>
<h2>{e(lab['controller'])}</h2><p>{e(notice.controller)}<br>{e(notice.controller_address)}</p>
<h2>{e(lab['rights'])}</h2><p>{e(notice.rights)}</p>
<p>{e(lab['contact'])}: <a href="mailto:{e(notice.contact_email)}">{e(notice.contact_email)}</a> —
<a href="{e(notice.cnil_complaint_url)}">{e(lab['cnil'])}</a></p>{other}
<h2>{e(lab['sensors'])} ({len(notice.sensors)})</h2><table id="sensors"><tr><th>id</th><th></th><th></th><th>WGS84</th></tr>{rows}</table>
</body></html>"""


def build_router(rate_limit) -> APIRouter:  # type: ignore[no-untyped-def]
    router = APIRouter(dependencies=[Depends(rate_limit)], tags=["transparency"])

    async def _notice(request: Request, lang: Lang) -> TransparencyNotice:
        async with request.app.state.pool.connection() as conn:
            sensors = await request.app.state.queries.sensors(conn)
        return build_notice(request.app.state.settings, sensors, lang)

    @router.get("/v1/transparency", response_model=TransparencyNotice, summary="Transparency notice (JSON)",
                description="Every sensor, what it measures and never does, purposes, retention, controller, contact and rights.")
    async def transparency_json(request: Request, lang: Annotated[Lang, Query()] = "fr") -> TransparencyNotice:
        return await _notice(request, lang)

    @router.get("/transparency", response_class=HTMLResponse, summary="Transparency notice (HTML page, fr/en)")
    async def transparency_page(request: Request, lang: Annotated[Lang, Query()] = "fr") -> HTMLResponse:
        return HTMLResponse(render_html(await _notice(request, lang)))

    return router
