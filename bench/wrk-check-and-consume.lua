-- wrk script: POST /api/v1/threads/t<1..1000>/check-and-consume, 1 prompt + 1 completion token,
-- each with a unique idempotency key (as the library benchmark's callers send), bearer token
-- from $BUDGET_LEDGER_TOKEN. The budgets (100,000 per thread) never run out in a short run.
local made = 0
function setup(thread)
  made = made + 1
  thread:set("id", made)
end

local counter = 0
local headers = {["Content-Type"] = "application/json"}
function init(args)
  math.randomseed(id * 7919 + os.time())
  local token = os.getenv("BUDGET_LEDGER_TOKEN")
  if token and token ~= "" then headers["Authorization"] = "Bearer " .. token end
end

function request()
  counter = counter + 1
  local path = "/api/v1/threads/t" .. math.random(1, 1000) .. "/check-and-consume"
  local body = '{"promptTokens":1,"completionTokens":1,"idempotencyKey":"wrk-' .. id .. '-' .. counter .. '"}'
  return wrk.format("POST", path, headers, body)
end
