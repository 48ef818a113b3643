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
