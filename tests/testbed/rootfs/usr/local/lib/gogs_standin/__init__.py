"""A stand-in for the gogs/gogs Docker image, as a user meets it on first run, for one Gogs release at a time.

GOGS_STANDIN_VERSION picks the release (the test image sets it): 0.11.19 (gogs/gogs v0.11.19, June 2017, what
the seed's untagged ``gogs/gogs`` pulled) or 0.13.4 (v0.13.4, the latest release).  Every behaviour is read from
gogs/gogs at that tag, and the file it comes from is named beside the code.  One module per concern:

- ``release``: what differs between the two releases (versions, defaults, app.ini keys, error shapes);
- ``messages``: Gogs' English messages (conf/locale/locale_en-US.ini) and i18n's Tr;
- ``binding``: the Install form's binding rules (pkg/form or internal/form, go-macaron/binding);
- ``wire``, ``drivers``, ``database``: Postgres as Gogs' driver meets it (lib/pq of 2016 for 0.11.19, pgx
  v5.3.0 for 0.13.4: their connect steps and error texts), and the tables and rows through psycopg2;
- ``system``: the run user, ``git`` on PATH, directories (Go's error texts);
- ``appini``: custom/conf/app.ini, read and saved as InstallPost saves it;
- ``install``: InstallPost's checks in Gogs' order;
- ``pages``: the markup (templates/install.tmpl, base/alert.tmpl, base/footer.tmpl, ...);
- ``server``: the routes (cmd/web.go): redirects to /install, /healthcheck (macaron toolbox), the API;
- ``main``: the image's start (docker/start.sh, s6/gogs/setup and run): directories, then Gogs as ``git``.
"""
