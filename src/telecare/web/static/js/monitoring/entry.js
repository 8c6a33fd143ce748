// Manual entry: send the browser's UTC offset with the local time, and suggest units for the chosen measure.
const form = document.getElementById("manual-entry");
const kind = document.getElementById("kind");
const unit = document.getElementById("unit");
const list = document.getElementById("units");
document.getElementById("tz_offset").value = String(-new Date().getTimezoneOffset());
function syncUnits() {
  const units = kind.selectedOptions[0].dataset.units.split(",");
  list.replaceChildren(...units.map((u) => Object.assign(document.createElement("option"), { value: u })));
  if (!units.includes(unit.value)) unit.value = units[0];
  const bp = kind.value === "blood_pressure";
  form.querySelector("#value").disabled = bp;
  form.querySelector("#systolic").disabled = !bp;
  form.querySelector("#diastolic").disabled = !bp;
}
kind.addEventListener("change", syncUnits);
syncUnits();
