-- Argo CD health of a CMP Wallet: Healthy while it has credits (a low
-- balance says so in the message), Degraded once exhausted (runs get 402).
local hs = {}
if obj.status == nil or obj.status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the CMP operator to compute the balance"
  return hs
end
local c = {}
for _, cond in ipairs(obj.status.conditions) do c[cond.type] = cond end
local funded = c["Funded"]
if funded == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Funded condition"
elseif funded.status == "True" or funded.reason == "Low" then
  hs.status = "Healthy"
  hs.message = funded.message
else
  hs.status = "Degraded"
  hs.message = funded.message
end
return hs
