-- wrk script for bench/compare.sh: every request writes a new, distinct key with a
-- fixed-size value (durable PUT).
--
--   wrk -s bench/wrk-put.lua http://127.0.0.1:PORT -- crusty RUN_ID [VALUE_BYTES]
--       PUT /keys/<key> with the raw value as the body (Crusty Ring's HTTP API)
--   wrk -s bench/wrk-put.lua http://127.0.0.1:PORT -- etcd RUN_ID [VALUE_BYTES]
--       POST /v3/kv/put {"key": base64, "value": base64} (etcd's v3 JSON gateway)
--
-- Keys are "wrk-<RUN_ID>-<thread>-<n>", so threads and runs never write the same key.

local threads_started = 0

function setup(thread)
   thread:set("thread_id", threads_started)
   threads_started = threads_started + 1
end

local b64chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

local function base64(s)
   local out = {}
   for i = 1, #s, 3 do
      local a, b, c = s:byte(i, i + 2)
      local n = a * 65536 + (b or 0) * 256 + (c or 0)
      local c1 = math.floor(n / 262144) % 64
      local c2 = math.floor(n / 4096) % 64
      local c3 = math.floor(n / 64) % 64
      local c4 = n % 64
      out[#out + 1] = b64chars:sub(c1 + 1, c1 + 1) .. b64chars:sub(c2 + 1, c2 + 1)
         .. (b and b64chars:sub(c3 + 1, c3 + 1) or "=")
         .. (c and b64chars:sub(c4 + 1, c4 + 1) or "=")
   end
   return table.concat(out)
end

local mode, prefix, value, value_b64
local n = 0

function init(args)
   mode = args[1] or "crusty"
   if mode ~= "crusty" and mode ~= "etcd" then
      error("mode must be crusty or etcd, not " .. mode)
   end
   prefix = "wrk-" .. (args[2] or "0") .. "-" .. tostring(thread_id or 0) .. "-"
   value = string.rep("v", tonumber(args[3] or "16"))
   value_b64 = base64(value)
end

function request()
   n = n + 1
   local key = prefix .. n
   if mode == "etcd" then
      local body = '{"key":"' .. base64(key) .. '","value":"' .. value_b64 .. '"}'
      return wrk.format("POST", "/v3/kv/put", { ["Content-Type"] = "application/json" }, body)
   end
   return wrk.format("PUT", "/keys/" .. key, { ["Content-Type"] = "application/octet-stream" }, value)
end
