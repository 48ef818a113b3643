-- Replays the requests listed in the file named by the REQUESTS environment variable, one
-- per line, in order: "METHOD<TAB>PATH<TAB>AUTHORIZATION<TAB>BODY" (empty fields allowed).
-- Each line is sent once; past the end the list starts again (the benchmark makes it
-- longer than a run can use, so webhook deliveries are not repeated).
local requests = {}
local index = 0

function init(args)
  for line in io.lines(os.getenv("REQUESTS")) do
    local method, path, auth, body = line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
    local headers = { ["Content-Type"] = "application/json" }
    if auth ~= "" then headers["Authorization"] = auth end
    if body == "" then body = nil end
    requests[#requests + 1] = wrk.format(method, path, headers, body)
  end
end

function request()
  index = index % #requests + 1
  return requests[index]
end

-- With DELAY_MS set, each connection pauses before each request for an exponentially
-- distributed time of that mean: a Poisson arrival process per connection, about
-- connections x 1000 / DELAY_MS requests per second in all, instead of wrk's closed loop.
-- (Equal pauses would keep the connections in lockstep, firing in bursts.)
local mean_pause = tonumber(os.getenv("DELAY_MS") or "0")

function delay()
  if mean_pause == 0 then return 0 end
  return math.floor(-math.log(1 - math.random()) * mean_pause)
end
