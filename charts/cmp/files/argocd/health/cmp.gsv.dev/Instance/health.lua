-- Argo CD health of a CMP Instance: its phase, with the message of the
-- condition that explains it. Failed (only a spec change helps) and a
-- refused commit or sync are Degraded; Suspended is Suspended.
local degraded = { GitPushRejected = true, RenderFailed = true, ConnectorOutsideTenant = true, SyncFailed = true }
local hs = {}
if obj.status == nil or obj.status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the CMP operator to report status"
  return hs
end
local c = {}
for _, cond in ipairs(obj.status.conditions) do c[cond.type] = cond end
if obj.status.observedGeneration ~= nil and obj.metadata.generation ~= nil and obj.status.observedGeneration < obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "The CMP operator has not reconciled generation " .. obj.metadata.generation .. " yet"
  return hs
end
local ready = c["Ready"]
local message = ready ~= nil and ready.message or "Waiting for the Ready condition"
local phase = obj.status.phase
if phase == "Suspended" then
  hs.status = "Suspended"
  hs.message = c["Suspended"] ~= nil and c["Suspended"].message or "suspended"
elseif phase == "Ready" then
  hs.status = "Healthy"
  hs.message = message
elseif phase == "Failed" or (ready ~= nil and degraded[ready.reason]) then
  hs.status = "Degraded"
  hs.message = message
elseif c["Synced"] ~= nil and c["Synced"].status == "False" and degraded[c["Synced"].reason] then
  hs.status = "Degraded"
  hs.message = c["Synced"].message
else
  hs.status = "Progressing"
  hs.message = message
end
return hs
