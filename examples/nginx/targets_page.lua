--- examples/nginx/targets_page.lua: the /targets HTML page, like
-- Prometheus's targets page: one table per job (up/total in the heading),
-- a row per target with endpoint, state, labels, last scrape, duration and
-- error. Plain HTML and a little CSS, no external assets, no JavaScript.
--   render(status, now) -> html   (status: resty.promscrape.status())
local M = {}

local format, concat = string.format, table.concat

local ENT = { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&#39;" }

local function esc(s)
  return (tostring(s or ""):gsub("[&<>\"']", ENT))
end

local function ago(t, now)
  if not t then return "never" end
  local d = now - t
  if d < 1 then return format("%d ms ago", math.floor(d * 1000)) end
  if d < 120 then return format("%.1f s ago", d) end
  return format("%d min ago", math.floor(d / 60))
end

local function labels(t)
  local keys, out = {}, {}
  for k in pairs(t or {}) do keys[#keys + 1] = k end
  table.sort(keys)
  for i, k in ipairs(keys) do
    out[i] = format('<span class="label">%s="%s"</span>', esc(k), esc(t[k]))
  end
  return concat(out, " ")
end

local CSS = [[
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em} h2{font-size:1.1em;margin-top:1.6em}
table{border-collapse:collapse;width:100%;font-size:.9em}
th,td{border:1px solid #ddd;padding:.35em .5em;text-align:left;vertical-align:top}
th{background:#f4f4f4}
.state{font-weight:bold;padding:.1em .45em;border-radius:.25em;color:#fff}
.state-up{background:#28a745} .state-down{background:#dc3545} .state-unknown{background:#6c757d}
.label{display:inline-block;background:#eef;border-radius:.2em;padding:0 .3em;margin:.1em;font-family:monospace}
.error{color:#dc3545;font-family:monospace} .meta{color:#666;font-size:.85em}
]]

function M.render(status, now)
  now = now or os.time()
  local jobs, order = {}, {}
  for _, t in ipairs(status.active or {}) do
    if not jobs[t.job] then
      jobs[t.job] = {}
      order[#order + 1] = t.job
    end
    local l = jobs[t.job]
    l[#l + 1] = t
  end
  table.sort(order)
  local out = {
    "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
    "<title>Targets - promscrape</title><style>", CSS, "</style></head><body>",
    "<h1>Targets</h1>",
    format('<p class="meta">worker %s, %s mode, status taken %s</p>', esc(status.worker),
      esc(status.mode), esc(ago(status.updated, now))),
  }
  if #order == 0 then out[#out + 1] = '<p id="no-targets">No active targets.</p>' end
  for _, job in ipairs(order) do
    local up = 0
    for _, t in ipairs(jobs[job]) do if t.health == "up" then up = up + 1 end end
    out[#out + 1] = format('<h2 id="job-%s">%s (%d/%d up)</h2>', esc(job), esc(job), up, #jobs[job])
    out[#out + 1] = "<table><thead><tr><th>Endpoint</th><th>State</th><th>Labels</th>"
      .. "<th>Last Scrape</th><th>Scrape Duration</th><th>Error</th></tr></thead><tbody>"
    for _, t in ipairs(jobs[job]) do
      out[#out + 1] = format('<tr class="target" data-job="%s" data-health="%s">'
        .. '<td class="endpoint"><a href="%s">%s</a></td>'
        .. '<td><span class="state state-%s">%s</span></td><td>%s</td>'
        .. '<td class="last-scrape">%s</td><td class="duration">%s</td>'
        .. '<td class="error">%s</td></tr>',
        esc(job), esc(t.health), esc(t.url), esc(t.url), esc(t.health),
        esc(string.upper(t.health or "")), labels(t.labels), esc(ago(t.last_scrape, now)),
        t.last_scrape and format("%.3f ms", (t.last_scrape_duration or 0) * 1000) or "",
        esc(t.last_error))
    end
    out[#out + 1] = "</tbody></table>"
  end
  out[#out + 1] = "</body></html>\n"
  return concat(out)
end

return M
