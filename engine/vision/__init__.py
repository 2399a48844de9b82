"""Reading pictures: captions and Midjourney-style prompts for /describe."""
