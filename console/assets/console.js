// Progressive enhancement: Copy buttons, hidden without JavaScript (the
// text can still be selected and copied by hand).
for (const button of document.querySelectorAll("button[data-copy]")) {
	const source = document.getElementById(button.dataset.copy);
	const status = document.querySelector(".copy-status");
	button.hidden = false;
	button.addEventListener("click", async () => {
		let copied = false;
		try {
			await navigator.clipboard.writeText(source.value ?? source.textContent);
			copied = true;
		} catch {
			if (source.select) source.select();
			copied = document.execCommand("copy");
		}
		button.textContent = copied ? "Copied" : "Press Ctrl+C";
		if (status) status.textContent = copied ? "Copied to the clipboard." : "Copy the selected text with Ctrl+C (⌘C on a Mac).";
		setTimeout(() => { button.textContent = "Copy"; }, 2000);
	});
}
