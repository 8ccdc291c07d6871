-- Argo CD health of a CMP Project: Healthy once its runtime namespace and
-- isolation are in place; Degraded when it needs a fix from you.
local degraded = { InvalidObject = true, NotInControlNamespace = true, OrganizationNotFound = true }
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
if c["Suspended"] ~= nil and c["Suspended"].status == "True" then
  hs.status = "Suspended"
  hs.message = c["Suspended"].message
  return hs
end
local ready = c["Ready"]
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
elseif ready ~= nil and degraded[ready.reason] then
  hs.status = "Degraded"
else
  hs.status = "Progressing"
end
hs.message = ready ~= nil and ready.message or "Waiting for the Ready condition"
return hs
