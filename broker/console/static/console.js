// Progressive enhancement only: every page works without this file. On the queue it asks the
// broker every 10 s how many calls wait and, when that changes, says so in the page's polite
// live region and its title. It never acts on the user's behalf and binds no keys.
"use strict";
(function () {
  const region = document.getElementById("queue-status");
  if (!region) { return; }
  let known = Number(region.dataset.count || "0");
  async function look() {
    try {
      const answer = await fetch("/console/queue/count", { credentials: "same-origin" });
      if (!answer.ok) { return; }
      const count = (await answer.json()).pending;
      if (count !== known) {
        const more = count > known;
        known = count;
        document.title = "(" + count + ") Queue · toolbroker";
        region.textContent = count + " call(s) waiting" +
          (more ? ": new calls arrived, reload the page to see them." : ".");
      }
    } catch (error) {
      // the broker is restarting or the network is down: try again at the next tick
    }
  }
  window.setInterval(look, 10000);
})();
