#!/bin/sh
# The sandbox walkthrough of README.md, end to end: create a test-mode client, verify a person by
# SMS code, get a service token, introspect and revoke it the way OAuth libraries do (RFC 7662 /
# RFC 7009 form bodies, HTTP Basic client authentication). POSIX sh and curl only.
#
#   sh examples/quickstart.sh            # against `make run` on http://127.0.0.1:8000
#
# Environment: REALNAME_URL (the service), REALNAME (the `realname` command that creates the
# client), REALNAME_CLIENT_ID and REALNAME_API_KEY (use an existing test-mode client instead),
# QUICKSTART_PHONE (the sandbox allows one SMS a minute per number).
set -eu

BASE=${REALNAME_URL:-http://127.0.0.1:8000}
REALNAME=${REALNAME:-.venv/bin/realname}
PHONE=${QUICKSTART_PHONE:-13800138000}
RUN=$(date +%s)

# The first string value named $2 in the JSON document $1 (top-level fields come first in these
# answers; enough for this walkthrough, no jq needed).
field() {
    printf '%s' "$1" | grep -o "\"$2\": *\"[^\"]*\"" | head -n 1 | sed 's/.*: *"\(.*\)"/\1/'
}

# call EXPECTED_STATUS curl-arguments...: print the body; stop unless the status is the expected.
call() {
    expected=$1
    shift
    answer=$(curl -sS -w '\n%{http_code}' "$@")
    status=$(printf '%s' "$answer" | tail -n 1)
    body=$(printf '%s' "$answer" | sed '$d')
    if [ "$status" != "$expected" ]; then
        echo "expected HTTP $expected, got $status: $body" >&2
        exit 1
    fi
    printf '%s' "$body"
}

step() { printf '\n== %s\n' "$1" >&2; }

if [ -z "${REALNAME_API_KEY:-}" ]; then
    step "create a test-mode client"
    created=$("$REALNAME" clients create --name "Quickstart $RUN" --mode test --level L2)
    echo "$created" >&2
    CLIENT_ID=$(field "$created" client_id)
    KEY=$(field "$created" api_key)
else
    CLIENT_ID=${REALNAME_CLIENT_ID:?set REALNAME_CLIENT_ID with REALNAME_API_KEY}
    KEY=$REALNAME_API_KEY
fi
AUTH="Authorization: Bearer $KEY"

step "start a verification"
verification=$(call 201 "$BASE/v1/verifications" -H "$AUTH" \
    -H "Content-Type: application/json" -H "Idempotency-Key: quickstart-$RUN" \
    -d "{\"external_user_id\": \"quickstart-$RUN\", \"real_name\": \"张三\",
         \"id_number\": \"11010519491231002X\", \"phone\": \"$PHONE\",
         \"consent\": {\"policy_version\": \"2026-01\"}}")
echo "$verification" >&2
ID=$(field "$verification" id)

step "wait for the checks (pending -> awaiting_code)"
status=$(field "$verification" status)
tries=0
while [ "$status" = "pending" ]; do
    tries=$((tries + 1))
    [ "$tries" -le 60 ] || { echo "still pending after 30 s" >&2; exit 1; }
    sleep 0.5
    status=$(field "$(call 200 "$BASE/v1/verifications/$ID" -H "$AUTH")" status)
done
echo "status: $status" >&2
[ "$status" = "awaiting_code" ] || { echo "expected awaiting_code" >&2; exit 1; }

step "read the code from the sandbox inbox"
CODE=""
tries=0
while [ -z "$CODE" ]; do
    tries=$((tries + 1))
    [ "$tries" -le 60 ] || { echo "no message in the sandbox inbox after 30 s" >&2; exit 1; }
    CODE=$(field "$(call 200 "$BASE/v1/sandbox/messages?verification_id=$ID" -H "$AUTH")" code)
    [ -n "$CODE" ] || sleep 0.5
done
echo "a code arrived" >&2

step "submit the code"
verified=$(call 200 "$BASE/v1/verifications/$ID/sms-code" -H "$AUTH" \
    -H "Content-Type: application/json" -H "Idempotency-Key: quickstart-code-$RUN" \
    -d "{\"code\": \"$CODE\"}")
echo "status: $(field "$verified" status)" >&2

step "issue a service token"
issued=$(call 201 -X POST "$BASE/v1/verifications/$ID/tokens" -H "$AUTH" \
    -H "Idempotency-Key: quickstart-token-$RUN")
TOKEN=$(field "$issued" access_token)
echo "token_type: $(field "$issued" token_type)" >&2

step "introspect it (RFC 7662: form body, Basic client_id:api_key)"
active=$(call 200 -u "$CLIENT_ID:$KEY" --data-urlencode "token=$TOKEN" "$BASE/v1/tokens/introspect")
echo "$active" >&2
case $active in *'"active":true'*) ;; *) echo "expected an active token" >&2; exit 1 ;; esac

step "revoke it (RFC 7009)"
call 200 -u "$CLIENT_ID:$KEY" --data-urlencode "token=$TOKEN" \
    --data-urlencode "token_type_hint=access_token" "$BASE/v1/tokens/revoke" >/dev/null
inactive=$(call 200 -u "$CLIENT_ID:$KEY" --data-urlencode "token=$TOKEN" "$BASE/v1/tokens/introspect")
echo "$inactive" >&2
[ "$inactive" = '{"active":false}' ] || { echo "expected {\"active\":false}" >&2; exit 1; }

printf '\nquickstart: verified %s, issued, introspected and revoked a token\n' "$ID"
