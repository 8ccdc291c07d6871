-- Argo CD health of a CMP Offering: Healthy when a version can be sold (its
-- artifact verified); Degraded when none can, or an artifact does not match.
local degraded = { NoUsableVersion = true, ArtifactMismatch = true, InvalidObject = true }
local hs = {}
if obj.status == nil or obj.status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the CMP operator to verify the artifacts"
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
local verified = c["ArtifactsVerified"]
if verified ~= nil and verified.status ~= "True" and degraded[verified.reason] then
  hs.status = "Degraded"
  hs.message = verified.message
  return hs
end
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
elseif ready ~= nil and degraded[ready.reason] then
  hs.status = "Degraded"
else
  hs.status = "Progressing"
end
hs.message = ready ~= nil and ready.message or "Waiting for the Ready condition"
return hs
