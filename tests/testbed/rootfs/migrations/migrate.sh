#!/bin/sh
# Harbor's notary images run their schema migrations first; the stand-ins have none.
echo "notary migrations: nothing to do (stand-in)"
